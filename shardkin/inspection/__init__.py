"""Looking at a built split: ``shardkin info`` (:mod:`.info`, the manifest alone),
``verify`` (:mod:`.verify`, every byte and sample against the manifest) and ``show``
(:mod:`.sheet`, a contact sheet of random clips, drawn with Pillow). Splits and shards
are opened through :mod:`shardkin.store.split` and read through :mod:`shardkin.format`."""
