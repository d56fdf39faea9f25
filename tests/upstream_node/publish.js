// A Node.js upstream publishing events to eventful's `events` exchange, without Celery.
//
//   node publish.js AMQP_URL < events.json
//
// events.json is an array of {form, event, routingKey?, messageId?}: `form` is
// "structured" or "binary" (CloudEvents 1.0 over AMQP) or "plain" (the README's envelope
// as the body); `event` is the envelope {id, type, version, source, occurred_at, payload}.
// Fields left out of `event` are left out of the message (the suite sends broken ones on
// purpose). Every publish is persistent and confirmed by the broker before exiting 0.
'use strict';

const amqp = require('amqplib');

function cloudEvent(event) {
  const attributes = {
    specversion: '1.0',
    id: event.id,
    type: event.type,
    source: event.source,
    time: event.occurred_at,
    dataversion: event.version,
  };
  return Object.fromEntries(Object.entries(attributes).filter(([, v]) => v !== undefined));
}

function render({ form, event }) {
  if (form === 'structured') {
    const body = { ...cloudEvent(event), datacontenttype: 'application/json', data: event.payload };
    return { body, contentType: 'application/cloudevents+json', headers: {} };
  }
  if (form === 'binary') {
    const headers = {};
    for (const [name, value] of Object.entries(cloudEvent(event))) {
      headers[`cloudEvents:${name}`] = typeof value === 'number' ? value : String(value);
    }
    return { body: event.payload, contentType: 'application/json', headers };
  }
  if (form === 'plain') {
    return { body: event, contentType: 'application/json', headers: {} };
  }
  throw new Error(`unknown form ${JSON.stringify(form)}`);
}

async function main() {
  const url = process.argv[2];
  if (!url) throw new Error('usage: node publish.js AMQP_URL < events.json');
  const messages = JSON.parse(require('fs').readFileSync(0, 'utf8'));
  const connection = await amqp.connect(url);
  try {
    const channel = await connection.createConfirmChannel();
    for (const message of messages) {
      const { body, contentType, headers } = render(message);
      channel.publish('events', message.routingKey || message.event.type,
        Buffer.from(JSON.stringify(body)), {
          persistent: true, contentType, contentEncoding: 'utf-8', headers,
          messageId: message.messageId,
        });
    }
    await channel.waitForConfirms();
    console.log(`published ${messages.length} event(s), all confirmed`);
  } finally {
    await connection.close();
  }
}

main().catch((err) => {
  console.error(err.message || err);
  process.exit(1);
});
