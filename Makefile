# Container and demo entry points. The CLI itself builds with npm (npm run build, npm test).
BASE_IMAGE ?= codi:slim
NODE_IMAGE ?= node:20-bookworm-slim
IMAGE ?= codi:complete
# The engine, or a whole build command: docker, podman, buildah, or e.g.
# "buildah bud --format docker --isolation chroot".
DOCKER ?= docker

# podman and buildah build OCI images by default, and an OCI image has no HEALTHCHECK: they must
# build in docker format. docker needs BuildKit for the Dockerfile's cache mount.
engine := $(notdir $(firstword $(DOCKER)))
ifeq ($(words $(DOCKER)),1)
  ifeq ($(engine),docker)
    BUILD_COMMAND = DOCKER_BUILDKIT=1 $(DOCKER) build
  else ifeq ($(engine),podman)
    BUILD_COMMAND = $(DOCKER) build --format docker
  else ifeq ($(engine),buildah)
    BUILD_COMMAND = $(DOCKER) build --format docker --layers
  else
    BUILD_COMMAND = $(DOCKER) build
  endif
else
  BUILD_COMMAND = $(if $(filter docker,$(engine)),DOCKER_BUILDKIT=1 )$(DOCKER)
endif
docker_format := $(or $(findstring --format docker,$(DOCKER)),$(findstring --format=docker,$(DOCKER)))

.PHONY: build-complete llama-server demo

## build-complete: the CODI Complete image (docs/reference.md, "The container"), FROM $(BASE_IMAGE)
build-complete:
ifneq ($(filter podman buildah,$(engine)),)
ifneq ($(words $(DOCKER)),1)
ifeq ($(docker_format),)
	$(error DOCKER="$(DOCKER)" builds an OCI image, which drops the HEALTHCHECK: add --format docker)
endif
endif
endif
	$(BUILD_COMMAND) -f docker/Dockerfile.complete --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg NODE_IMAGE=$(NODE_IMAGE) -t $(IMAGE) .

## llama-server: build (or find cached) llama-server for this machine; prints its path
llama-server:
	scripts/build-llama-server.sh

## demo: the end-to-end demo on the bundled tiny model (README)
demo:
	scripts/demo.sh
