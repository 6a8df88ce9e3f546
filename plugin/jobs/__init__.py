"""What the plugin asks the workers and what it does with the answers: prompts, submit, paste,
automatic segmentation, stacks, propagation, encoding ahead. No Qt; runs network calls off the GUI thread.
"""
