// One tus upload with tus-js-client (node), for tests/integration/test_tus.py.
// argv[2]: JSON {endpoint, key, chunkSize}; the file comes on stdin and stays
// in memory. Prints JSON {url, retries} once the upload has finished.
import { Upload } from "tus-js-client";

const spec = JSON.parse(process.argv[2]);
const parts = [];
for await (const part of process.stdin) parts.push(part);
const file = Buffer.concat(parts);

let retries = 0;
const upload = new Upload(file, {
  endpoint: spec.endpoint,
  chunkSize: spec.chunkSize,
  metadata: { key: spec.key, filetype: "application/octet-stream" },
  retryDelays: [0, 200, 500, 1000],
  onShouldRetry: () => {
    retries += 1;
    return true;
  },
  onError: (error) => {
    console.error(String(error));
    process.exit(1);
  },
  onSuccess: () => {
    console.log(JSON.stringify({ url: upload.url, retries }));
  },
});
upload.start();
