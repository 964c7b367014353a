// Which vectors the library grid shows. Pure, unit-tested.

/** Does a vector pass the filters? (search text, tag, class index, author) */
export function matchesFilters(vector, { text, tag, classIndex, author }) {
  if (text && !`${vector.name} ${vector.description}`.toLowerCase().includes(text.toLowerCase())) return false;
  if (tag && !vector.tags.includes(tag)) return false;
  if (classIndex !== '' && classIndex !== undefined && !vector.edited_classes.includes(Number(classIndex))) return false;
  if (author && vector.author !== author) return false;
  return true;
}
