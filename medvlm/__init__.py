"""RadCheck model side: slicing, processing, runtime, prompts, reports, checking."""
