"""The worker side: reading, running and settling messages, and the loops around them."""
