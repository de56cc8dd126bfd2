// What each host of a fleet says of itself, in etcd: the rollouts pick and watch their canaries
// by it, and the sidecar shows it.
/** What a host says of itself, kept under <prefix>/hosts/NAME on a lease: it is gone when the host is. */
export interface HostStatus {
  host: string;
  revision: number;
  /** Whether it takes changes (its /readyz), and why not. */
  ready: boolean;
  reason?: string;
  /** Keys (or apps) whose fleet change its schemas refuse. */
  diverged: string[];
  /** Each app's schema version in force there. */
  versions: Record<string, number>;
  time: string;
  /** The formats of the fleet's log it reads beyond the first (FleetLog adds them as it announces). */
  reads?: string[];
}
