#!/bin/sh
# Writes the secrets from the environment to the files alertmanager.yml names, then starts
# Alertmanager. Use it as the container entrypoint: SLACK_WEBHOOK_URL=... PAGERDUTY_ROUTING_KEY=...
set -eu
dir=/etc/alertmanager/secrets
mkdir -p "$dir"
umask 077
printf '%s' "${SLACK_WEBHOOK_URL:?set SLACK_WEBHOOK_URL}" > "$dir/slack_webhook_url"
printf '%s' "${PAGERDUTY_ROUTING_KEY:?set PAGERDUTY_ROUTING_KEY}" > "$dir/pagerduty_routing_key"
exec alertmanager --config.file=/etc/alertmanager/alertmanager.yml "$@"
