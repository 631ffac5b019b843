#!/bin/sh
# Runs inside the stack VM (tests/vm/vm.sh up --stack), as root: the data of
# a Docker host in use, before phase 1. No network: the image is a busybox
# root filesystem imported into Docker, pushed to the VM's registry
# (harbor.vm.test, trusted only for the push: the plan places the CA), a
# container running with --restart always, a named volume of files whose
# sha256 are recorded in /root/seed.sha256, a bind-mounted host folder, and
# containerd's own content (the image imported into a containerd namespace).
set -eu
. /etc/plumb-vm/registry.env
reg=$REGISTRY
img=$reg/library/plumbbox:v1

# The image: a busybox root filesystem, `docker import`ed.
rm -rf /tmp/rootfs && mkdir -p /tmp/rootfs/bin /tmp/rootfs/data /tmp/rootfs/host
cp /bin/busybox /tmp/rootfs/bin/busybox
for a in sh sleep cat ls sha256sum; do ln -s busybox "/tmp/rootfs/bin/$a"; done
tar -C /tmp/rootfs -c . | docker import -c 'CMD ["/bin/sh"]' - "$img" >/dev/null

# Pushed to the registry, with its CA trusted for this push only.
mkdir -p "/etc/docker/certs.d/$reg"
cp /etc/plumb-vm/ca.crt "/etc/docker/certs.d/$reg/ca.crt"
echo "$REGISTRY_PASSWORD" | docker login -u "$REGISTRY_USER" --password-stdin "$reg" >/dev/null 2>&1
docker push -q "$img" >/dev/null
rm -rf "/etc/docker/certs.d/$reg"
rmdir /etc/docker/certs.d 2>/dev/null || true

# A named volume with files of known sha256, filled by a container.
docker volume create appdata >/dev/null
docker run --rm -v appdata:/data "$img" sh -c '
  i=0; while [ $i -lt 20 ]; do
    head -c $((i * 7919 + 100)) /bin/busybox > /data/file$i; i=$((i + 1))
  done' 
docker run --rm -v appdata:/data "$img" sh -c 'cd /data && sha256sum file*' >/root/seed.sha256
# And bulk, so that the migration's copy takes long enough to show progress.
vol=/var/lib/docker/volumes/appdata/_data
head -c 200M /dev/urandom >"$vol/bulk"
(cd "$vol" && sha256sum bulk) >>/root/seed.sha256

# A bind of a host folder, and the service: restarts with Docker.
mkdir -p /srv/app && echo "bound from the host" >/srv/app/hello.txt
docker run -d --name app --restart always -v appdata:/data -v /srv/app:/host "$img" \
  sh -c 'while :; do cat /host/hello.txt >/dev/null; sleep 5; done' >/dev/null

# containerd's own content: the image in a namespace of its own.
docker save "$img" -o /tmp/plumbbox.tar
ctr -n plumb images import /tmp/plumbbox.tar >/dev/null
rm -f /tmp/plumbbox.tar

docker ps --format '{{.Names}} {{.Status}}'
