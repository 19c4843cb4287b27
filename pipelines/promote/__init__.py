"""Register the evaluated model; move the champion alias only when it beats the champion."""
