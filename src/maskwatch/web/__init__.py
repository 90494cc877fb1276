"""The HTTP service and web page (``maskwatch serve``); needs the ``web`` extra: FastAPI and uvicorn.

    from maskwatch import MaskDetector
    from maskwatch.web.app import create_app
    app = create_app(MaskDetector())   # any ASGI server can run it
"""
