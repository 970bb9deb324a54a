"""What the service tells its operators: logs (with request ids), Prometheus metrics, model
monitoring (inputs and predictions against the training range) and the worker's runtime
policy (garbage collection, log noise). Imports nothing else of the service but settings."""
