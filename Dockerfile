# Loupe app image. CPU by default; a CUDA image with a build argument (PyTorch's CUDA wheels carry the CUDA
# runtime, so the host needs only the NVIDIA driver and the NVIDIA container toolkit):
#   docker build -t loupe .                                        # CPU
#   docker build -t loupe:cuda --build-arg TORCH_VARIANT=cu128 .   # CUDA (a variant PyTorch publishes for 2.13)
#   docker run -p 127.0.0.1:8501:8501 -v loupe-data:/data/loupe loupe
#   docker run --gpus all -p 127.0.0.1:8501:8501 -v loupe-data:/data/loupe loupe:cuda
FROM python:3.11-slim

ARG TORCH_VARIANT=cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONPATH=/app \
    LOUPE_HOME=/data/loupe \
    NUMBA_CACHE_DIR=/data/loupe/numba \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

WORKDIR /app
COPY requirements.txt .
# torch first from PyTorch's index for the chosen variant; requirements.txt's torch==2.13.0 is then satisfied
RUN pip install --no-cache-dir torch==2.13.0 --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
    && pip install --no-cache-dir -r requirements.txt

# the code stays owned by root (the app cannot change it); only LOUPE_HOME is the user's
COPY . .
RUN groupadd --gid 1000 loupe \
    && useradd --create-home --uid 1000 --gid 1000 loupe \
    && mkdir -p /data/loupe \
    && chown 1000:1000 /data/loupe
USER 1000:1000
VOLUME ["/data/loupe"]

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"]
# Inside the container the server listens on every interface so that `docker run -p` can reach it; which host
# addresses see it is decided by -p (127.0.0.1:8501:8501 keeps it on the host). See README, "Deploying for a lab".
# No file watcher: the code in an image does not change, and a watcher costs every new session.
CMD ["streamlit", "run", "app.py", "--server.address", "0.0.0.0", "--server.port", "8501", "--server.fileWatcherType", "none"]
