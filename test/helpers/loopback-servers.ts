// Servers this test process runs on loopback addresses: TCP answering "ok" to a line, UDP
// keeping what it received. Tests connect to them from fenced cgroups and containers.
import dgram from 'node:dgram';
import net from 'node:net';

export class LoopbackServers {
  readonly servers: Array<net.Server | dgram.Socket> = [];
  /** TCP servers answering "ok" to a line, by address. */
  readonly tcp: Record<string, number> = {};
  /** Datagrams each UDP server received, by address. */
  readonly udp: Record<string, { port: number; got: string[] }> = {};

  listenTcp(addr: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const s = net.createServer((c) => {
        c.on('data', () => c.end('ok\n'));
        c.on('error', () => {});
      });
      s.on('error', reject);
      s.listen(0, addr, () => {
        this.tcp[addr] = (s.address() as net.AddressInfo).port;
        this.servers.push(s);
        resolve();
      });
    });
  }

  listenUdp(addr: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const s = dgram.createSocket(addr.includes(':') ? 'udp6' : 'udp4');
      const got: string[] = [];
      s.on('message', (m) => got.push(m.toString()));
      s.on('error', reject);
      s.bind(0, addr, () => {
        this.udp[addr] = { port: s.address().port, got };
        this.servers.push(s);
        resolve();
      });
    });
  }

  close(): void {
    for (const s of this.servers) s.close();
  }
}
