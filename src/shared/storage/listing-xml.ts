/**
 * The listing answers of S3 and the stores that copy its XML (OSS's ListObjectsV2, COS's GET
 * Bucket): read with string searches. Their XML is flat and regular, and this costs about a
 * microsecond a key where general XML parsers (the AWS SDK's, xml2js) cost 30–70.
 */

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

/** XML text to a string: the five named entities and numeric references. */
export function unescapeXml(s: string): string {
  if (!s.includes('&')) return s;
  return s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[a-z]+);/g, (m, e: string) => {
    if (e[0] === '#') return String.fromCodePoint(e[1] === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
    return ENTITIES[e] ?? m;
  });
}

export interface ListedObject {
  key: string;
  size: number;
  mtime: number;
  etag?: string;
}

export interface ListPage {
  contents: ListedObject[];
  prefixes: string[];
  truncated: boolean;
  /** ListObjectsV2's continuation token. */
  nextToken?: string;
  /** Version 1 listings' next marker (COS). */
  nextMarker?: string;
  /** 'url' when the service URL-encoded the keys (as asked with encoding-type=url). */
  encodingType?: string;
}

/** The text of the first <tag>...</tag> in s from `from`, or undefined. */
function element(s: string, tag: string, from = 0, to = s.length): string | undefined {
  const open = s.indexOf(`<${tag}>`, from);
  if (open < 0 || open >= to) return undefined;
  const start = open + tag.length + 2;
  const end = s.indexOf(`</${tag}>`, start);
  return end < 0 || end > to ? undefined : s.slice(start, end);
}

/** A ListObjectsV2 (or GET Bucket) answer: objects, common prefixes and how to go on. */
export function parseListPage(xml: string): ListPage {
  const contents: ListedObject[] = [];
  const prefixes: string[] = [];
  let at = 0;
  for (;;) {
    const open = xml.indexOf('<Contents>', at);
    if (open < 0) break;
    const close = xml.indexOf('</Contents>', open);
    if (close < 0) break;
    const key = element(xml, 'Key', open, close);
    if (key !== undefined) {
      const o: ListedObject = {
        key: unescapeXml(key),
        size: Number(element(xml, 'Size', open, close) ?? 0),
        mtime: Date.parse(element(xml, 'LastModified', open, close) ?? '') || 0,
      };
      const etag = element(xml, 'ETag', open, close);
      if (etag !== undefined) o.etag = unescapeXml(etag).replace(/"/g, '');
      contents.push(o);
    }
    at = close + 11;
  }
  at = 0;
  for (;;) {
    const open = xml.indexOf('<CommonPrefixes>', at);
    if (open < 0) break;
    const close = xml.indexOf('</CommonPrefixes>', open);
    if (close < 0) break;
    const p = element(xml, 'Prefix', open, close);
    if (p !== undefined) prefixes.push(unescapeXml(p));
    at = close + 17;
  }
  const page: ListPage = { contents, prefixes, truncated: element(xml, 'IsTruncated') === 'true' };
  const token = element(xml, 'NextContinuationToken');
  if (token !== undefined) page.nextToken = unescapeXml(token);
  const marker = element(xml, 'NextMarker');
  if (marker !== undefined) page.nextMarker = unescapeXml(marker);
  const encoding = element(xml, 'EncodingType');
  if (encoding !== undefined) page.encodingType = encoding;
  return page;
}
