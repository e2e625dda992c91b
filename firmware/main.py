"""/main.py of every board: run the sipmesh board application."""

import fw_app

fw_app.main()
