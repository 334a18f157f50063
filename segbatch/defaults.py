"""Every default segbatch uses, named, with its unit. Settings override these."""

from __future__ import annotations

# Model
DEFAULT_MODEL = "shapes-seg/1"  # name/version under models/
CONFIDENCE_THRESHOLD = 0.25  # detections scoring below this are dropped
IOU_THRESHOLD = 0.7  # NMS overlap above which the lower-scoring box goes
MAX_DETECTIONS = 300  # per image, after NMS
MASK_THRESHOLD = 0.5  # on the sigmoid of the mask logits
LETTERBOX_FILL = 114  # grey of the padding, as Ultralytics trains with

# Decoding
MAX_IMAGE_PIXELS = 100_000_000  # width x height; larger images are refused unread
ALPHA_BACKGROUND_RGB = (255, 255, 255)  # transparent pixels are composited on white

# Polygons
POLYGON_EPSILON_PX = 1.0  # Douglas-Peucker tolerance in original pixels
MIN_POLYGON_AREA_PX = 4.0  # parts of a mask smaller than this are dropped

# Work distribution
BATCH_SIZE = 16  # images per task
MAX_QUEUED_BATCHES = 64  # the producer waits while the queue holds more than this
QUEUE_POLL_INTERVAL_S = 1.0
FETCH_CONCURRENCY = 8  # concurrent object downloads per worker process
TASK_SOFT_TIME_LIMIT_S = 600
TASK_TIME_LIMIT_S = 660
VISIBILITY_TIMEOUT_S = 3600  # must exceed TASK_TIME_LIMIT_S
TASK_MAX_RETRIES = 3
QUEUE_NAME = "segbatch"

# Services
DATABASE_URL = "sqlite:///segbatch.sqlite"
BROKER_URL = "redis://127.0.0.1:6379/0"
S3_ADDRESSING_STYLE = "path"
