"""Model architecture: what the simulator needs to know about an LLM."""

from llmsim.model.config import ModelConfig, load_model_config, model_config_from_dict

__all__ = ["ModelConfig", "load_model_config", "model_config_from_dict"]
