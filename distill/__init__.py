"""Distillation: the trainers (TRL SFT with PEFT LoRA) and distillation-method plugins (hard-label SFT, ...)."""
