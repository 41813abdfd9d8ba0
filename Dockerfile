# GPU image of sip-train.
#   docker build -t sip-train .
#   docker run --gpus all -e WANDB_API_KEY sip-train python train.py problem=heat optimizer=sip trainer=gpu
# PyPI's torch wheels bring their own CUDA libraries; the CUDA base image supplies the rest of the runtime.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install -r requirements.txt
ENV PATH=/opt/venv/bin:$PATH

COPY . .
CMD ["python", "train.py"]
