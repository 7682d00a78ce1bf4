"""perdure inside the frameworks you already use: ``perdure.integrations.fastapi``
(``pip install 'perdure[web]'``)."""
