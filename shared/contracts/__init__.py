"""The published language's machinery: the event and command bases (``models``), reading one
version as another (``evolution``), what may change (``compatibility``), and the committed
documents (``documents``, ``asyncapi``). Stands on ``shared.core`` only."""
