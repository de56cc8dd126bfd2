// Real etcd servers for the fleet tests (Debian's etcd-server; .ci/run installs it), killed after the test.
import { startEtcdCluster, type EtcdCluster } from "../bench/etcd.js";
import { afterThisTest, tempDir } from "./helpers.js";

export { compactEtcd, leaderOf } from "../bench/etcd.js";

/** An etcd cluster of `size` members on free loopback ports, stopped after the test. */
export async function startEtcd(size = 1): Promise<EtcdCluster> {
  const cluster = await startEtcdCluster(await tempDir(), size);
  afterThisTest(() => cluster.stop());
  return cluster;
}
