"""The web demo (`elite demo`): the registered ELITE model in a Gradio page, with SAM masks from clicks."""
