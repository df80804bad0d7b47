"""One APIRouter per resource: health and metrics, model descriptions, images."""
