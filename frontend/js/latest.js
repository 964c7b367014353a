// "Newest wins" for requests driven by a slider: at most one request is in flight; while it runs, later requests
// replace each other so only the newest waits; when the in-flight one ends the newest is sent. Results older than
// one already shown are dropped. Pure (the request and display functions are injected) so it is unit-tested.

export class LatestOnly {
  /**
   * @param {(params: any) => Promise<any>} run  performs one request and resolves with its result
   * @param {(result: any, params: any) => void} show  displays a result
   * @param {(error: Error) => void} [fail]
   */
  constructor(run, show, fail = () => {}) {
    this.run = run;
    this.show = show;
    this.fail = fail;
    this.inFlight = false;
    this.waiting = null; // {params} of the newest request not sent yet
    this.issued = 0;
    this.shown = 0;
  }

  /** Requests `params`; returns at once. */
  request(params) {
    this.waiting = { params };
    if (!this.inFlight) this.next();
  }

  get busy() { return this.inFlight || this.waiting !== null; }

  async next() {
    const job = this.waiting;
    if (!job) return;
    this.waiting = null;
    this.inFlight = true;
    const ticket = ++this.issued;
    try {
      const result = await this.run(job.params);
      if (ticket > this.shown) {
        this.shown = ticket;
        this.show(result, job.params);
      }
    } catch (error) {
      this.fail(error);
    } finally {
      this.inFlight = false;
      if (this.waiting) this.next();
    }
  }
}
