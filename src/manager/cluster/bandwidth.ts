/**
 * `--bwlimit` for the whole cluster: the limit is shared equally among the live executors and
 * shared again whenever one joins or leaves, so N workers use the limit, not N times it.
 */
export class BandwidthShare {
  readonly #members = new Map<string, (bytesPerSecond: number) => void>();

  constructor(
    /** Bytes per second for all executors together; 0: no limit. */
    readonly total: number,
  ) {}

  get members(): number {
    return this.#members.size;
  }

  /** The share each live executor gets now (0: no limit). */
  get share(): number {
    return this.total > 0 ? this.total / Math.max(1, this.#members.size) : 0;
  }

  /** An executor joins; `apply` is called with its share now and whenever the share changes. */
  join(id: string, apply: (bytesPerSecond: number) => void): void {
    this.#members.set(id, apply);
    this.#reshare();
  }

  leave(id: string): void {
    if (this.#members.delete(id)) this.#reshare();
  }

  #reshare(): void {
    if (this.total <= 0) return;
    const share = this.share;
    for (const apply of this.#members.values()) apply(share);
  }
}
