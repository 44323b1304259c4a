"""The SQL store shared by the writers, the analytics and the budgets: schema, the event -> row
mapping, engines and URLs, migrations."""
