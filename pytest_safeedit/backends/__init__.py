"""Generators: the Generator protocol and Request, the Hugging Face backend (GGUF cache, architectures, per-row edited weights), the OpenAI-compatible and vLLM backends, tiny test models."""
