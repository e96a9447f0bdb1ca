"""The mover's Kubernetes side: runs inside the Job and writes the CR's status itself."""
