"""The producer side: a shadow, its tasks, and the ways work is added."""
