"""What a service author declares and uses: the ``Service`` (``declaration``), the
transactional ``outbox`` and its relay, and the in-process test kit (``testing``). Stands on
``shared.worker`` and below; re-exported by ``shared`` itself."""
