"""Provider names as each consumer spells them: LangChain's ``ls_provider`` values mapped to the
genai-prices catalog's provider ids and to OpenTelemetry's ``gen_ai.provider.name``."""

from __future__ import annotations

OPENAI_COMPATIBLE = "openai-compatible"
"""The provider of a call sent through an OpenAI client to a server the catalog does not know."""

# LangChain ``ls_provider`` names -> genai-prices provider ids (None: no public catalog price).
PROVIDER_ALIASES: dict[str, str | None] = {
    "openai": "openai",
    "azure": "azure",
    "azure_openai": "azure",
    "azure-openai": "azure",
    "anthropic": "anthropic",
    "bedrock": "aws",
    "amazon_bedrock": "aws",
    "bedrock_converse": "aws",
    "aws": "aws",
    "google_genai": "google",
    "google_vertexai": "google",
    "google_anthropic_vertex": "google",
    "vertexai": "google",
    "google": "google",
    "gemini": "google",
    "mistralai": "mistral",
    "mistral": "mistral",
    "groq": "groq",
    "deepseek": "deepseek",
    "xai": "x-ai",
    "x-ai": "x-ai",
    "together": "together",
    "togetherai": "together",
    "fireworks": "fireworks",
    "cohere": "cohere",
    "perplexity": "perplexity",
    "openrouter": "openrouter",
    "cerebras": "cerebras",
    # Self-hosted runtimes: only a pricing/ override can price them.
    "openai-compatible": None,
    "ollama": None,
    "vllm": None,
    "llamacpp": None,
    "huggingface": None,
}

# LangChain's ``ls_provider`` values whose semconv ``gen_ai.provider.name`` is spelled differently.
SEMCONV_PROVIDER_NAMES = {
    "google_genai": "gcp.gen_ai", "google_vertexai": "gcp.vertex_ai", "google": "gcp.gen_ai",
    "bedrock": "aws.bedrock", "amazon_bedrock": "aws.bedrock", "azure": "azure.ai.openai",
    "azure_openai": "azure.ai.openai", "xai": "x_ai", "mistralai": "mistral_ai", "mistral": "mistral_ai",
}
