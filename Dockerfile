# GPU image of sip-train: a plain Python base and PyPI's default torch wheel, which brings its own CUDA
# libraries (so no CUDA base image can disagree with it); the host's NVIDIA driver comes in with --gpus.
#   docker build -t sip-train .
#   docker run --gpus all -v $PWD/outputs:/app/outputs -e WANDB_API_KEY sip-train problem=heat optimizer=sip
# Arguments are sip-train overrides; runs train on the GPU (trainer=gpu) and stop with one line if there is none.
# Sweeps: docker run --gpus all -v $PWD/multirun:/app/multirun --entrypoint sip-sweep sip-train sweep=heat_methods
# Another CUDA build of torch: docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .
FROM python:3.11-slim

ARG TORCH_INDEX_URL=""
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt .
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install "$(grep '^torch==' requirements.txt)" --index-url "$TORCH_INDEX_URL"; fi \
    && pip install -r requirements.txt

COPY . .
RUN pip install --no-deps .
ENTRYPOINT ["sip-train", "trainer=gpu"]
