"""5. Scores -> a choice: the scored sweep that picks the best LoRA and sliders."""
