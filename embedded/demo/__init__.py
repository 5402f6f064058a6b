"""What `manage.py up` submits: the demo sites and queues (`queues.yaml`, also a complete example
of the `load_queues` format), a demo workflow and a demo campaign."""
