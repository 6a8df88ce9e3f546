"""The plugin's Qt widgets: thin views over the jobs and label bookkeeping (one widget per file)."""
