"""`python -m services.dispatcher`"""

from services.common.runtime import tune_gc, use_huge_pages

use_huge_pages()  # first: it may start this process again (services/common/runtime.py)

import asyncio  # noqa: E402

from services.common.logs import configure_logging  # noqa: E402
from services.common.settings import Settings  # noqa: E402
from services.dispatcher.service import SERVICE, serve  # noqa: E402

tune_gc()
settings = Settings()
configure_logging(SERVICE, level=settings.log_level, fmt=settings.log_format)
asyncio.run(serve(settings))
