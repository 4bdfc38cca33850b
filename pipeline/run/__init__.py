"""The run: jobs scheduled through the stages, publishing, and the summary at the end."""
