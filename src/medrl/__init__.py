"""medrl: reinforcement-learning fine-tuning of medical vision-language models, Kubernetes-native."""

__version__ = "0.1.0"
