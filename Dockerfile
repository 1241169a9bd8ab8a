# Loupe app image (CPU). Build: docker build -t loupe .   Run: docker run -p 8501:8501 -v loupe:/data/loupe loupe
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    LOUPE_HOME=/data/loupe

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
RUN useradd --create-home --uid 1000 loupe \
    && mkdir -p /data/loupe \
    && chown -R loupe /data/loupe
USER loupe
VOLUME ["/data/loupe"]

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"
CMD ["streamlit", "run", "app.py", "--server.address", "0.0.0.0", "--server.port", "8501"]
