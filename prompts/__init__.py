"""The prompt templates, shipped inside the installed package as `gateway.prompts` (data only; the
loader is `gateway.prompt_templates`)."""
