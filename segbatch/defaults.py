"""Every default segbatch uses, named, with its unit. Settings override these."""

from __future__ import annotations

# Model
DEFAULT_MODEL = "shapes-seg/4"  # name/version under models/
CONFIDENCE_THRESHOLD = 0.25  # detections scoring below this are dropped
IOU_THRESHOLD = 0.7  # NMS overlap above which the lower-scoring box goes
MAX_DETECTIONS = 300  # per image, after NMS
MASK_THRESHOLD = 0.5  # on the sigmoid of the mask logits
LETTERBOX_FILL = 114  # grey of the padding, as Ultralytics trains with

# Decoding
MAX_OBJECT_BYTES = 512 * 1024 * 1024  # larger objects are refused unread
MAX_IMAGE_PIXELS = 100_000_000  # width x height; larger images are refused unread
ALPHA_BACKGROUND_RGB = (255, 255, 255)  # transparent pixels are composited on white
# Pillow format names that are decoded; a camera's multi-picture JPEG (Pillow's "MPO")
# counts as JPEG and gives its first picture
DECODE_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF")

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
# A worker whose database is unavailable (a restart, a failover) keeps its batch's
# results and tries again, pausing from the first pause up to the longest, for up
# to the wait; then the batch goes back to the queue. Images the object store
# cannot serve for now are fetched again the same way, then fail. Both waits
# together must fit in TASK_SOFT_TIME_LIMIT_S.
DATABASE_WAIT_S = 120.0
STORAGE_WAIT_S = 120.0
FIRST_RETRY_PAUSE_S = 0.5  # doubled after each failed try
LONGEST_RETRY_PAUSE_S = 15.0
QUEUE_NAME = "segbatch"

# Services
DATABASE_URL = "sqlite:///segbatch.sqlite"
BROKER_URL = "redis://127.0.0.1:6379/0"
S3_ADDRESSING_STYLE = "path"

# Object storage
S3_CONNECT_TIMEOUT_S = 10.0
S3_READ_TIMEOUT_S = 60.0
S3_MAX_ATTEMPTS = 5  # botocore "standard" retries; the first try counts
S3_MIN_POOL_CONNECTIONS = 10  # botocore's own default; raised to the fetch concurrency
IMAGE_EXTENSIONS = frozenset(
    {"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"}
)

# Producer
SEGMENT_TASK_NAME = "segbatch.segment_batch"  # the worker task, sent by name
ENQUEUE_PAGE_SIZE = 1000  # listed URIs checked against the database per round trip

# Database
SQLITE_BUSY_TIMEOUT_S = 30.0  # how long an SQLite writer waits for another's lock
POLYGON_DECIMALS = 2  # polygon vertices are stored rounded to this many pixel decimals

# Model toolchain (export, quantization, evaluation; the workers use none of these)
ONNX_OPSET = 17  # pinned, so that a re-export of the same weights gives the same graph
EVAL_CONFIDENCE = 0.001  # keep nearly every detection: COCO AP integrates over scores
EVAL_MAX_DETECTIONS = 100  # per image, as many as COCO's AP counts
CALIBRATION_IMAGES = 300  # images through the FP32 model to set INT8 ranges
ACCURACY_CONTROL_MAX_DROP_POINTS = 1.0  # mask mAP50-95 percentage points INT8 may lose
ACCURACY_CONTROL_VALIDATION_IMAGES = 100
BENCHMARK_DURATION_S = 15  # per IR, under OpenVINO's benchmark_app
MAX_INT8_IR_BYTES = 5 * 1024 * 1024  # model.xml + model.bin of the default build

# Inference core (decoding as Ultralytics' predict does it)
NMS_MAX_CANDIDATES = 30_000  # highest-scoring boxes that enter NMS; others are dropped
NMS_CLASS_OFFSET_PX = 7680  # class k's boxes shift by k times this: NMS stays per class
MASK_CHUNK_PIXELS = 4_000_000  # float32 pixels a mask upsampling step holds at once
