"""Input and output guards for the gateway; the contract is in ``base``."""
