# medcore image: Airflow 3.3.2 (Python 3.11) + the medcore package + TensorFlow (CPU).
# docker-compose.yaml builds it as medcore-airflow:latest. Build it on a host that has Docker
# (the dev machine has none).
FROM apache/airflow:3.3.2-python3.11

# /opt/medcore is the project root inside the container. conditions.yaml, data/, runs/ and
# templates/ are bind-mounted there at run time. Group 0 may write, because compose runs the
# containers as ${AIRFLOW_UID}:0.
USER root
RUN mkdir -p /opt/medcore/.keras /opt/medcore/runs /opt/medcore/data \
 && chown -R airflow:0 /opt/medcore \
 && chmod -R g+rwX /opt/medcore

USER airflow
COPY --chown=airflow:0 pyproject.toml requirements.lock README.md /opt/medcore/
COPY --chown=airflow:0 medcore/ /opt/medcore/medcore/
# Baked-in copy of the report templates. The ./templates bind mount takes its place at run time.
COPY --chown=airflow:0 templates/ /opt/medcore/templates/

# Do not install -r requirements.lock here: the image already has Airflow and its own pinned
# dependencies. Naming apache-airflow==${AIRFLOW_VERSION} (set by the base image) stops pip from
# moving Airflow while it installs medcore's dependencies (TensorFlow and the rest). The install
# is editable so that medcore's defaults (../conditions.yaml, ../templates) resolve to
# /opt/medcore.
RUN pip install --no-cache-dir \
      "apache-airflow==${AIRFLOW_VERSION}" \
      apache-airflow-providers-celery \
      -e /opt/medcore

ENV MEDCORE_TEMPLATES=/opt/medcore/templates \
    MEDCORE_CONFIG=/opt/medcore/conditions.yaml \
    KERAS_HOME=/opt/medcore/.keras
