"""`python -m services.delivery`"""

import asyncio

from services.common.logs import configure_logging
from services.common.runtime import tune_gc
from services.common.settings import Settings
from services.delivery.service import SERVICE, serve

tune_gc()
settings = Settings()
configure_logging(SERVICE, level=settings.log_level, fmt=settings.log_format)
asyncio.run(serve(settings))
