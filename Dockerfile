# The jacreg dashboard with one PyTorch: the pinned torch==2.14.1 wheel from PyPI, which bundles
# CUDA, so the same image runs on a CPU-only host and (with the NVIDIA container toolkit) on a GPU.
# The base image carries Python only; a PyTorch base image would add a second torch underneath.
#   docker build -t jacreg .
#   docker run --gpus all -p 8501:8501 jacreg      # or without --gpus on a CPU-only host
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    GIT_PYTHON_REFRESH=quiet \
    PIP_NO_CACHE_DIR=1 \
    JACREG_MODELS_DIR=/app/models \
    JACREG_RUNS_DIR=/app/runs
WORKDIR /app

# Optional offline test set (full Fashion-MNIST); the rest of the data ships with the Python wheels.
RUN apt-get update \
    && apt-get install -y --no-install-recommends dataset-fashion-mnist \
    && rm -rf /var/lib/apt/lists/*
# Ray, so the image can also serve as a worker: `ray start --head ...` (README, "Jobs on a Ray cluster").
RUN pip install --no-cache-dir "ray[client]==2.60.0"

# Dependencies first (pinned in pyproject.toml), so code edits do not reinstall torch.
COPY pyproject.toml README.md ./
COPY jacreg/ jacreg/
RUN pip install . && python -c "import torch, jacreg; print('torch', torch.__version__)"

COPY app/ app/
COPY models/ models/
RUN mkdir -p /app/runs

EXPOSE 8501
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://localhost:8501/_stcore/health')"
CMD ["python", "-m", "streamlit", "run", "app/main.py", "--server.headless=true", \
     "--server.address=0.0.0.0", "--server.port=8501"]
