"""Distillation plugins: the method interface (``distill.base``), the trainers every method and the teacher use (TRL
SFT with PEFT LoRA / QLoRA, ``distill.trainers``), hard-label SFT and logit KD (``distill.methods``) and QCRD
(``distill.qcrd``)."""
