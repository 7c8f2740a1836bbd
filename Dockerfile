# The jacreg dashboard on a CUDA-capable PyTorch image.
#   docker build -t jacreg .
#   docker run --gpus all -p 8501:8501 jacreg
FROM pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 \
    GIT_PYTHON_REFRESH=quiet \
    PIP_NO_CACHE_DIR=1
WORKDIR /app

# git for foolbox's GitPython import; the pinned torch wheels in requirements.txt bundle CUDA.
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*
COPY requirements.txt .
RUN pip install -r requirements.txt
# Ray, so the image can also serve as a GPU worker: `ray start --head ...` (README, "Jobs on a GPU cluster").
RUN pip install "ray[client]==2.60.0"

COPY jacreg/ jacreg/
COPY app/ app/
COPY models/ models/
COPY pyproject.toml README.md ./

EXPOSE 8501
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://localhost:8501/_stcore/health')"
CMD ["python", "-m", "streamlit", "run", "app/main.py", "--server.headless=true", \
     "--server.address=0.0.0.0", "--server.port=8501"]
