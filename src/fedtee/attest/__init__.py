"""fedtee's verifier library: parse, verify and appraise TEE evidence.

Usable alone: it never imports fedtee's server, client or wire layers.
"""
