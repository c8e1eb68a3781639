"""hyperhive: a swarm of AI coding agents whose every config change goes through git."""
