# Container and demo entry points. The CLI itself builds with npm (npm run build, npm test).
BASE_IMAGE ?= codi:slim
IMAGE ?= codi:complete

.PHONY: build-complete llama-server demo

## build-complete: the CODI Complete image (docs/reference.md, "The container"), FROM $(BASE_IMAGE)
build-complete:
	docker build -f docker/Dockerfile.complete --build-arg BASE_IMAGE=$(BASE_IMAGE) -t $(IMAGE) .

## llama-server: build (or find cached) llama-server for this machine; prints its path
llama-server:
	scripts/build-llama-server.sh

## demo: the end-to-end demo on the bundled tiny model (README)
demo:
	scripts/demo.sh
