// Send spans to spanlake with the official OpenTelemetry JavaScript SDK over OTLP/gRPC
// (@grpc/grpc-js on Node's HTTP/2): `node export.mjs HOST:PORT SERVICE SPANS COMPRESSION`.
// Each span carries a 2,000-byte attribute, so an export spans many HTTP/2 DATA frames.
// Prints one JSON line: {"exported": n, "code": c} (code 0 = success).
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-grpc";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";

const [endpoint, service, count, compression] = process.argv.slice(2);
const exporter = new OTLPTraceExporter({
  url: `http://${endpoint}`,
  compression: compression === "gzip" ? "gzip" : "none",
});
let exported = 0;
let code = 0;
const counting = {
  export(spans, done) {
    exporter.export(spans, (result) => {
      if (result.code === 0) exported += spans.length;
      else code = result.code;
      done(result);
    });
  },
  shutdown: () => exporter.shutdown(),
  forceFlush: () => exporter.forceFlush(),
};
const provider = new BasicTracerProvider({
  resource: resourceFromAttributes({ "service.name": service }),
  spanProcessors: [
    new BatchSpanProcessor(counting, { maxExportBatchSize: 200, scheduledDelayMillis: 100 }),
  ],
});
const tracer = provider.getTracer("node-client", "1.0.0");
const filler = "x".repeat(2000);
for (let i = 0; i < Number(count); i++) {
  const span = tracer.startSpan(`op ${i}`, { attributes: { "node.i": i, "node.filler": filler } });
  span.end();
}
await provider.forceFlush();
await provider.shutdown();
console.log(JSON.stringify({ exported, code }));
