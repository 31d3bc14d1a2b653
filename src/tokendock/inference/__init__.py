"""Engines that turn token prompts into text. They know nothing of money, users or HTTP."""
