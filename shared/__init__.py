"""The platform library every service imports; the only package that knows Celery and kombu."""
