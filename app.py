"""Start DreamStudio: python app.py [--model ID_OR_PATH] [--workspace DIR] [--port N]
[--share] [--auth USER:PASS] [--device cpu|cuda|mps]. See --help."""

from dreamstudio.ui.launch import main

if __name__ == "__main__":
    raise SystemExit(main())
